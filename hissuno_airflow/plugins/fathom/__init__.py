"""Fathom (fathom.ai meeting notetaker): recorded meetings with transcripts and summaries, as meeting sessions."""
