"""Apps as a team writes them without meshprop: each calls a downstream through a plain client
(``DOWNSTREAM`` in the environment) and answers with what it saw."""
