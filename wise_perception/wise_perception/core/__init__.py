"""The WISE contract shared by the node, the CLI, the pipeline and training.

Pure Python + numpy: importing it needs no ROS, no GPU and no model library. Modules:
``prompts`` (every mode from one template), ``answer_schema`` (the answer JSON's keys and
shapes, spelled once), ``answer`` (the parser), ``geometry`` (the policy
frame and box maths), ``tokens`` (#Tok), ``limits`` (input bounds), ``manifest`` (the exported
checkpoint's manifest), ``metrics`` (gIoU/cIoU: the evaluator's and the bag replay's). Import
from the module that owns a name. What only training needs (rewards) lives in
``wise_training``.
"""
