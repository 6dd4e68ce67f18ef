"""The study: the resumable pipeline of stages over a work dir (`pipeline`, `rundir`, `runlog`, one module per
stage in `stages/`), the measured cost of every strategy (`cost`) and the report's figures (`figures`). It sits on
top of the library: nothing outside it imports it.
"""
