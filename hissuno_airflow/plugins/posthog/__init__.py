"""PostHog: product-usage signals per person as behavioural sessions, and the project's event and property
definitions as analytics knowledge."""
