"""Local endpoints: the operator's rendered pods run as processes on this machine (`mlendpoints local`)."""
