"""Entry points the Makefile runs (stack, make_env, demo, backfill); the code they share is in scripts.devstack."""
