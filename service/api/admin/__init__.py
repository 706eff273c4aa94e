"""The admin API: triple review and export, verdict statistics (Bearer admin key)."""
