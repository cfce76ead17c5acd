"""The paper's experiments (A. F. Queiruga, arXiv:2602.14495), built on the core.

`experiments` holds the settings of the speedrun and of every sweep behind the
figures and Table 1, with the paper's numbers; `reproduce` runs them and draws
`figures` and `table1`; `illustrations` draws the figures that need no sweep.  The
core package never imports this one.
"""
