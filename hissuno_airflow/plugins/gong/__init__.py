"""Gong: recorded calls and their transcripts as meeting sessions, by sync and by automation-rule webhook."""
