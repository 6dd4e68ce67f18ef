"""The study: the resumable pipeline of stages over a work dir (`pipeline`, `rundir`, `runlog`, one module per
stage in `stages/`), the measured cost of every strategy (`cost`), the report's figures (`figures`), the premise's
verdict (`premise`) and the report's consistency checks (`sanity`). It sits on top of the library: nothing outside
it imports it.
"""
