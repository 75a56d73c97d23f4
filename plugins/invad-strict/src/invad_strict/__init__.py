"""invad backend plugin for array-api-strict (functional derivatives only)."""
