"""Zendesk Support: solved and closed tickets as sessions, requesters as contacts, organizations as companies."""
