"""The report: load A/B results into one table, compute tables, draw figures, explore responses.

Modules: :mod:`~lekutils.report.load` (results and gate tables), :mod:`~lekutils.report.labels` (model
display labels, probe-set names), :mod:`~lekutils.report.tables`,
:mod:`~lekutils.report.figures` (one theme, PNG + PDF), :mod:`~lekutils.report.explorer` (ipywidgets).
"""
