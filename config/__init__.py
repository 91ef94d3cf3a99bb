"""Configuration: settings from the environment, logging, queue names, the cron table."""

from config.settings import ConfigError, Settings, get_settings, load_settings

__all__ = ["ConfigError", "Settings", "get_settings", "load_settings"]
