"""What a run will cost before anything is sent: the plan, the levers it expects to save, the budget guard."""
