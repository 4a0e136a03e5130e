"""Jira Cloud: issues of every project on every site an Atlassian 3LO grant reaches, by search and by webhook."""
