"""Replaying a recorded robot bag through the node's logic, at the desk (``wise-replay``).

No ROS install is needed: bags are read and written with ``rosbags`` (pure Python; the
``replay`` extra, never needed on a robot), and the node's inputs are read and paired by the
ROS-free code the node itself runs (:mod:`wise_perception.inputs`), in bag time.

``bag`` (reading rosbag2, MCAP or sqlite3, also cut ones), ``files`` (commands and labels
files), ``settings`` (the node parameters that decide results), ``timeline`` (the node's
command path in bag time), ``runner`` (one policy's replay, journaled), ``journal`` (the
replay folder), ``output_bag`` (the node's output topics as a bag), ``report`` (side by
side, contact sheet, scores), ``cli`` (``wise-replay``). Importing this package imports
nothing else.
"""
