"""The launcher: options, config, plan, table preparation, runners; runs on the machine that
starts the job, never on a worker."""
