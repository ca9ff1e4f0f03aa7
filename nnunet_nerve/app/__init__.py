"""The application layer: the command line (parsing and dispatch only), the doctor, the demo and its ablation."""
