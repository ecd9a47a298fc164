//! Redis store: the schema of functions and tasks, the durable queue and every task transition.
