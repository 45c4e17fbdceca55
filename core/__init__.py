"""The ground under the ground floor: what ``prompts`` and ``retrieval`` both need without importing each other.
It holds the root of recagent's one error tree (:mod:`core.errors`) and imports nothing of the project."""
