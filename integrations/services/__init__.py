"""The hop services of the integration chain, one module per framework.

Every hop does the same thing, so a chain reads the same whatever its order: record what it
received, call the next hop through meshprop's client for its framework, and answer with its
own record followed by everything downstream answered.
"""
