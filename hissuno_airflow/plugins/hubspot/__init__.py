"""HubSpot CRM: companies and contacts, by last-modified search and by signed webhooks."""
