"""Conversations the chat-template fixtures are rendered for."""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    },
]

CONVERSATIONS = {
    "single_user": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_multi_turn": {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "2+2 is 4."},
            {"role": "user", "content": "  And 3+3?\nExplain.  "},
        ]
    },
    "no_system_multi_turn": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke."},
            {"role": "assistant", "content": "Why did the chicken cross the road?"},
            {"role": "user", "content": "Why?"},
        ]
    },
    "unicode_and_quotes": {
        "messages": [
            {"role": "system", "content": "Réponds en français, s'il te plaît. \"Quotes\" and \\backslash\\."},
            {"role": "user", "content": "日本語で説明して 🚀\ttab"},
        ]
    },
    "tool_calls": {
        "tools": True,
        "messages": [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "What's the weather in Paris, and what is 2.5 + 4?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "a1b2c3d4e",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
                    },
                    {
                        "id": "f5g6h7i8j",
                        "type": "function",
                        "function": {"name": "add", "arguments": {"a": 2.5, "b": 4}},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "a1b2c3d4e", "name": "get_weather", "content": "{\"temperature\": 18, \"sky\": \"clear\"}"},
            {"role": "tool", "tool_call_id": "f5g6h7i8j", "name": "add", "content": "6.5"},
            {"role": "assistant", "content": "It is 18°C and clear in Paris; 2.5 + 4 = 6.5."},
            {"role": "user", "content": "Thanks!"},
        ],
    },
    "single_tool_call_content_none": {
        "tools": True,
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "k9l8m7n6o",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "k9l8m7n6o", "name": "get_weather", "content": "-3 and snowing"},
        ],
    },
    "tools_available_no_call": {
        "tools": True,
        "messages": [{"role": "user", "content": "Add 1 and 2 please."}],
    },
    "reasoning": {
        "messages": [
            {"role": "user", "content": "Is 17 prime?"},
            {
                "role": "assistant",
                "reasoning_content": "17 has no divisors other than 1 and itself.",
                "content": "Yes, 17 is prime.",
            },
            {"role": "user", "content": "And 21?"},
        ]
    },
    "assistant_last": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a color."},
            {"role": "assistant", "content": "<think>\nsome thought\n</think>\n\nBlue."},
        ]
    },
}
