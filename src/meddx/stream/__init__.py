"""Real-time device streams: MQTT messages, brokers, the runner, alerts, the store and device simulation.

Data flow: devices (or :mod:`meddx.stream.simulate`) publish chunks on
``meddx/devices/{device}/{signal}`` -> :class:`~meddx.stream.runner.StreamRunner`
validates, stores (:mod:`meddx.stream.store`), windows, checks quality
(:mod:`meddx.stream.quality`), classifies and applies alert rules
(:mod:`meddx.stream.alerts`) -> predictions and alerts published back over MQTT.
"""
