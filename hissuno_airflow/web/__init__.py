"""The web layer: one Flask blueprint (contract section 6) served under ``/hissuno``.

Inside Airflow it is mounted on the API server through ``fastapi_apps`` (see ``asgi.py``); under
``hissuno serve`` it runs on a plain WSGI server (``serve.py``).
"""
