//! Git sync of the environment repository.
