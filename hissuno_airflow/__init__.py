"""hissuno-airflow: the Hissuno integrations plugin system as an Apache Airflow provider."""

__version__ = "0.1.0"
