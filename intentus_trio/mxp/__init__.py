"""MXP: the encrypted reliable UDP transport (sans-IO core and its trio driver)."""
