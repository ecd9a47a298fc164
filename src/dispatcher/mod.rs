//! Dispatcher: moves queued tasks from Redis to executors (local mode) or workers.
