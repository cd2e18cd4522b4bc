"""The life of one input row: its states, the moves between them, and what each step does in each state.

This is the one place to read "what happens to a row in state X". Every step records what it learnt as
soon as it knows it (write-ahead for submissions) in the row's ledger record, keyed by ``row_id``, so a
task retry, a rerun, a cleared task or a backfill finds the row's real state instead of guessing, and
no money is spent twice:

==============  ==============================================  ===================================================
state           meaning                                         plan / submit / wait / store do
==============  ==============================================  ===================================================
(none)          never submitted                                 plan: generate; submit: write ``submitting``, send
``submitting``  a submit is being sent (written *before*)       plan + submit: as ``uncertain`` (loss seen now)
``uncertain``   the submit answer was lost: a task may exist    submit: adopt it from the task list, else refuse
``submitted``   the service accepted it: ``task_id`` known      submit: return the task; wait: poll that task
``generated``   the task SUCCEEDED; video not stored yet        submit, wait: reuse; store: copy the video
``succeeded``   the video is stored under ``videos/``           plan: skip (``already generated``); all: reuse
``failed``      refused or failed; ``billed`` says if paid      plan: final if billed or ``UNKNOWN``, else retry
==============  ==============================================  ===================================================

A lost submission is looked for in the task list (:mod:`talking_heads.row.reconcile`) in the submit step
that saw the loss and any later try or run within 24 h. The outcome each state becomes is
:func:`talking_heads.row.outcome.outcome_of`; every outcome code is an
:class:`~talking_heads.row.states.OutcomeCode`. :mod:`talking_heads.row.ledger` only stores and loads the
records.
"""
