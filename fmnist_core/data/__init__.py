"""Floor 2: the data set (IDX files, loading, labels), image preprocessing, exclusion lists."""
