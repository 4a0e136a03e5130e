"""TicketDesk: the worked example of ``docs/writing-a-plugin.md``; a provider package laid out like every one.

Not a built-in (built-ins are folders of ``hissuno_airflow/plugins/``): ``tests/plugins/test_ticketdesk.py``
imports it from ``docs/examples`` and registers it for its tests only.
"""
