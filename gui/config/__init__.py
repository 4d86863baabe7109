"""Peers and transfer options, persisted in the user's config directory."""

from gui.config.settings import (AppConfig, ConfigError, SecretStore, TransferOptions,
                                 default_config_path, default_data_dir, import_orthanc_json,
                                 load_config, loads_with_comments, save_config)

__all__ = ["AppConfig", "ConfigError", "SecretStore", "TransferOptions", "default_config_path",
           "default_data_dir", "import_orthanc_json", "load_config", "loads_with_comments",
           "save_config"]
