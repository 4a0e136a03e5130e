"""Linear: issues of each team, by GraphQL sync on update time and by signed webhooks (OAuth 2.0)."""
