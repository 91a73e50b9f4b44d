"""Where results go. Every sink implements ``inspector.sinks.base.Sink``."""
