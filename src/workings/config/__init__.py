"""Profiles: the YAML files in ``profiles/`` read into validated, typed configs (:mod:`.schema`, :mod:`.loading`)."""
