"""Slack: threads captured as sessions from the Events API, and the bot answering in them."""
