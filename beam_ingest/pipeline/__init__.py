"""The Beam pipeline: the composite transform, the build stages, the sinks, the completion
proof, checkpoints, restarts and progress; what the workers run."""
