"""synthdrive: synthetic driving data for rare conditions."""
