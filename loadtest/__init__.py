"""Load tests of the online service (Locust) and the generative baseline served the same way.

Nothing here imports torch: the load generator only needs Locust and a histories JSON file
(``loadtest/make_histories.py`` writes it on a machine that has the training code).
"""
