"""GitHub: repository issues as feedback sessions and repository content as codebase knowledge."""
