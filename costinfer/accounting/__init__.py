"""Where the money went: the summary, the waterfall, the files a run writes."""
