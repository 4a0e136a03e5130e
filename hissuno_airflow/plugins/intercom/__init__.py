"""Intercom: support conversations as sessions, by search on update time and by signed webhook."""
