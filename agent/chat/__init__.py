"""The conversational room: a chat turn (``conversation``), the preferences it tracks (``preferences``), catalog
title linking and matching (``catalog``) and the reply the model writes (``reply``). Import from the modules."""
