"""DULL neighbour discovery: AN_ACP floods out, heard floods into the adjacency table."""
