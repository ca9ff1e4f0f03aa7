"""The paper's evaluation: metrics, every comparison per case, Table 1, statistics and their writers."""
