"""Customer notifications: what the customer is told about their account, and in which words."""
