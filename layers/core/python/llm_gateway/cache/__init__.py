"""Response caches: the lookup step (`step.cache_lookup_step`), cache keys (`keys`) and purges (`purge`)."""
