// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OdsiToken: a minimal ERC-20 for tests, demos and local chains.
/// @notice The registry works with any ERC-20 that returns true from transfer/transferFrom
/// (no fee-on-transfer tokens). This one lets its minter create supply, nothing more.
contract OdsiToken {
    string public constant name = "odsi test token";
    string public constant symbol = "ODSI";
    uint8 public constant decimals = 18;

    uint256 public totalSupply;
    address public minter;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error NotMinter();
    error InsufficientBalance();
    error InsufficientAllowance();

    constructor() {
        minter = msg.sender;
    }

    /// @notice hands minting to another address (the registry, once deployed)
    function setMinter(address m) external {
        if (msg.sender != minter) revert NotMinter();
        minter = m;
    }

    function mint(address to, uint256 value) external {
        if (msg.sender != minter) revert NotMinter();
        totalSupply += value;
        unchecked {
            balanceOf[to] += value; // cannot overflow: totalSupply did not
        }
        emit Transfer(address(0), to, value);
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 a = allowance[from][msg.sender];
        if (a != type(uint256).max) {
            if (a < value) revert InsufficientAllowance();
            allowance[from][msg.sender] = a - value;
        }
        _move(from, to, value);
        return true;
    }

    function _move(address from, address to, uint256 value) private {
        uint256 b = balanceOf[from];
        if (b < value) revert InsufficientBalance();
        unchecked {
            balanceOf[from] = b - value;
            balanceOf[to] += value;
        }
        emit Transfer(from, to, value);
    }
}
