"""The one settings base: every setting reads ``DECISION_AUDIT_<NAME>`` from the environment."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DECISION_AUDIT_"


class AuditSettings(BaseSettings):
    """Base of the producer's, the worker's and the tools' settings.

    Arguments given in code or on the command line win over environment variables, which win
    over the defaults. Unknown ``DECISION_AUDIT_*`` variables are ignored (one environment
    configures several components), and so are empty ones: compose's ``${VAR:-}`` leaves a
    setting at its default.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)
