"""Trust: what a node has learned about its peers' behaviour, and what it lets them do."""
