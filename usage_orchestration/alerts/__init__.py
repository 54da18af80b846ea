"""Alerting core (no Dagster): the Alert model and dedup keys (``model``), rules turning warehouse
rows into desired alerts (``rules``), the outbox state machine (``outbox``), delivery channels
(``channels``: PagerDuty Events v2, Slack webhook) and one evaluation pass (``service``)."""
