"""Evaluation: classification and LM metrics, slices and calibration, the paired
champion/challenger tests, the HTML report. The ``evaluate`` stage that uses them is
:mod:`lmchain.stages.evaluate`."""
