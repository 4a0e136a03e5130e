"""Notion: database rows as issues and page trees as knowledge, by sync and by webhook."""
