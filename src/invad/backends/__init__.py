"""Built-in backend plugins. Each module registers one backend through ``invad_backends``."""
