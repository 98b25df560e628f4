"""The library serving code embeds: validate, redact, encode, chain, deliver (or spool)."""
