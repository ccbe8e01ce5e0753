"""The paper's effect reproduced end to end at CPU scale (``make reproduce``): a synthetic scene
world, a stand-in base policy trained here (SFT), a tiny SAM2, GRPO with the shipped configs,
one evaluation with every row. A development tool: the products never import it."""
